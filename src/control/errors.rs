//! Internal errors kept for operators: a panic in a request handler is caught at the framework
//! boundary (tower-http's `CatchPanic`), answered with a 500 JSON error, logged with the route,
//! counted in `meridian_internal_errors_total{kind}`, and kept in a bounded ring that
//! `GET /v1/errors` shows.
//!
//! It does not catch panics outside the control plane's handlers (DNS answers, background
//! tasks); those are not collected here yet.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;

use crate::metrics::Metrics;
use crate::state::{Clock, unix_ms};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::write::admit;

/// How many errors the ring keeps; older ones are dropped first.
const RING_SIZE: usize = 256;

/// One caught error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ErrorRecord {
    /// When, in milliseconds since the Unix epoch.
    unix_ms: u64,
    /// What kind: `panic`.
    kind: &'static str,
    /// Where: `http`.
    context: &'static str,
    /// The panic's message.
    message: String,
}

/// The most recent internal errors, at most [`RING_SIZE`].
#[derive(Debug, Default)]
pub struct ErrorLog {
    /// A `Mutex` because errors are rare and each critical section is a push or a copy.
    ring: Mutex<VecDeque<ErrorRecord>>,
}

impl ErrorLog {
    fn push(&self, record: ErrorRecord) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING_SIZE {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    fn list(&self) -> Vec<ErrorRecord> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }
}

/// The layer that turns a handler's panic into a 500 JSON answer, a log line, a count and a
/// ring entry.
pub(crate) fn catch_panics(
    errors: Arc<ErrorLog>,
    metrics: Arc<Metrics>,
    clock: Clock,
) -> CatchPanicLayer<impl Fn(Box<dyn Any + Send + 'static>) -> Response + Clone> {
    CatchPanicLayer::custom(move |payload: Box<dyn Any + Send + 'static>| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(%message, "a control-plane handler panicked; the request got a 500");
        metrics.record_internal_error("panic");
        errors.push(ErrorRecord {
            unix_ms: unix_ms(clock.now()),
            kind: "panic",
            context: "http",
            message,
        });
        ApiError::internal("the request failed inside the server; see GET /v1/errors")
            .into_response()
    })
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
    Ok(Json(state.errors.list()))
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
        let errors = Arc::new(ErrorLog::default());
        let metrics = Arc::new(Metrics::new());
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(catch_panics(errors.clone(), metrics.clone(), clock));
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
        let kept = errors.list();
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

    /// A handler that always panics, as a bug would.
    async fn boom() -> &'static str {
        panic!("injected by the test")
    }

    #[test]
    fn the_ring_keeps_the_most_recent() {
        let errors = ErrorLog::default();
        for n in 0..RING_SIZE + 3 {
            errors.push(ErrorRecord {
                unix_ms: n as u64,
                kind: "panic",
                context: "http",
                message: n.to_string(),
            });
        }
        let kept = errors.list();
        assert_eq!(kept.len(), RING_SIZE);
        assert_eq!(kept[0].unix_ms, 3);
    }
}
