//! The control plane's error: an HTTP status and a JSON body naming the problem.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::metrics::ErrorKind;

/// An API error: `{"error": "<code>", "message": "<what is wrong>"}` with a matching status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, e.g. `unauthorized`.
    pub code: &'static str,
    /// What is wrong, naming the bad value.
    pub message: String,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
    /// For a 500: what kind of internal error it was (the response carries it to the
    /// middleware that logs and keeps it); `None` when whoever decided it has logged and kept
    /// it already (the state manager, for a store failure).
    pub kind: Option<ErrorKind>,
}

/// What a 500 response carries (as a response extension) to the `observe` middleware, which
/// logs and keeps it with the request's route: handlers return errors and never log them.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What kind of internal error.
    pub(crate) kind: ErrorKind,
    /// Its message, as the client got it.
    pub(crate) message: String,
}

/// The body of every error response, whatever produced it: a handler, an extractor that
/// refused the query string or path, the router (404, 405) or the request timeout (408).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `request_timeout`, `conflict`, `payload_too_large`,
    /// `invalid_configuration`, `rate_limited`, `internal`, `unavailable`, `read_only`.
    error: &'static str,
    /// What is wrong.
    message: String,
    /// Every problem, for `invalid_configuration` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    problems: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            kind: Some(ErrorKind::Internal),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no valid token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not (the router adds `Allow`).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 408: the request took longer than the control plane allows.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// An error with `status`, from an extractor's rejection: its code is the one this file
    /// gives that status, else `internal` for a 5xx and `bad_request` for anything else.
    pub(crate) fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            status if status.is_server_error() => "internal",
            _ => "bad_request",
        };
        Self::new(status, code, message)
    }

    /// 409: refused by a safety rail.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: the body is too large.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 429: over the token's rate limit.
    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this token",
            )
        }
    }

    /// 500: something on our side failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 500: the state store failed (not for lack of disk: that is [`ApiError::read_only`]).
    pub fn store_failed(message: impl Into<String>) -> Self {
        ApiError {
            kind: Some(ErrorKind::Store),
            ..Self::internal(message)
        }
    }

    /// 503: shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503: the state store cannot write, so the control plane is read-only for now.
    pub fn read_only(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", message)
        }
    }
}

/// An invalid configuration on reload: 422 with every problem.
pub(crate) fn invalid_configuration(problems: &[crate::config::Problem]) -> Response {
    let body = ErrorBody {
        error: "invalid_configuration",
        message: format!(
            "the configuration has {} problem(s); the previous one keeps serving",
            problems.len()
        ),
        problems: problems.iter().map(ToString::to_string).collect(),
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let failure = self
            .kind
            .filter(|_| self.status == StatusCode::INTERNAL_SERVER_ERROR)
            .map(|kind| Failure {
                kind,
                message: self.message.clone(),
            });
        let body = ErrorBody {
            error: self.code,
            message: self.message,
            problems: Vec::new(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
