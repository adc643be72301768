//! `Query` and `Path` extractors whose rejections are [`ApiError`]s, so a bad query string or
//! path parameter gets the same JSON error body as every other error (axum's own answer
//! `text/plain`).
//!
//! They keep axum's names, so handlers and the OpenAPI annotations read as before. This file
//! does not validate values beyond deserializing them; handlers do that.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The query string, deserialized into `T`; 400 with a JSON error when it does not fit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub(crate) T);

/// The path parameters, deserialized into `T`; 400 with a JSON error when they do not fit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::with_status(
                rejection.status(),
                lowercase_first(&rejection.body_text()),
            )),
        }
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::with_status(
                rejection.status(),
                lowercase_first(&rejection.body_text()),
            )),
        }
    }
}

/// axum's messages start with a capital ("Failed to deserialize query string: …"); ours are
/// lowercase.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
