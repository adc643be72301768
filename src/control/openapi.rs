//! The error responses that every route shares, added to the OpenAPI document from the shape of
//! each operation, so that the document cannot forget one when a route is added.
//!
//! What the shared machinery answers, and therefore what is added here:
//! - every route: 408 (the request timeout in `mod.rs`) and 429 (the per-address limit,
//!   `Limiter::check_address`, before anything else);
//! - a route with a bearer `security` requirement: 401 (`auth::authenticate`), 403
//!   (`Caller::require`) and 429 (`Limiter::check`, per token);
//! - a route with parameters or a request body: 400 (the `extract` wrappers, `read_json`);
//! - a route with a request body: 413 (`read_json` and the directory line reader).
//!
//! Statuses that depend on what a handler does (404 for an unknown datacenter, 409 for a
//! refused drain, 422 for an invalid configuration, 500 and 503 for the state store and
//! shutdown) are written on each route's own `#[utoipa::path]`.
//!
//! [`for_deployment`] completes the document with what only the running configuration knows
//! (its datacenter names, its number of buckets), so that a request the document calls valid is
//! one this server accepts. This file defines no route.

use serde_json::Value;
use utoipa::OpenApi as _;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{
    ContentBuilder, Object, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};

use crate::dns::Snapshot;
use crate::routing::Toggle;

use super::ApiDoc;

/// The document as this server serves it: [`ApiDoc`] with the names and limits of the
/// configuration `snapshot` runs.
///
/// - the path parameter `dc` and the `home` and `replica` of pins and bucket moves may only name
///   a configured datacenter (elsewhere they are refused: 404 for the path, 400 for a body);
/// - the path parameter `name` (of a toggle) may only name a toggle;
/// - a bucket number is below the directory's number of buckets.
pub(super) fn for_deployment(snapshot: &Snapshot) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document is JSON");
    let names: Value = snapshot
        .loaded
        .config
        .datacenters
        .iter()
        .map(|dc| Value::from(dc.name.as_str()))
        .collect();
    if let Some(paths) = doc["paths"].as_object_mut() {
        let parameters = paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|operation| operation.get_mut("parameters"))
            .filter_map(Value::as_array_mut)
            .flatten();
        for parameter in parameters {
            if parameter["in"] == "path" && parameter["name"] == "dc" {
                parameter["schema"]["enum"] = names.clone();
            }
            if parameter["in"] == "path" && parameter["name"] == "name" {
                parameter["schema"]["enum"] = Toggle::ALL.iter().map(|t| t.name()).collect();
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field) in [
        ("PlacementBody", "home"),
        ("PlacementBody", "replica"),
        ("BucketMove", "home"),
        ("BucketMove", "replica"),
    ] {
        schemas[schema]["properties"][field]["enum"] = names.clone();
    }
    if let Some(directory) = &snapshot.directory {
        schemas["BucketMove"]["properties"]["bucket"]["maximum"] =
            Value::from(directory.directory.n_buckets().saturating_sub(1));
    }
    doc
}

/// Adds the shared error responses (as `#/components/responses/…`) to every operation.
pub(super) struct StandardResponses;

/// A shared response: status, component name, description.
const SHARED: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "the request is malformed: a query string, path parameter or body that does not parse, or a value out of range",
    ),
    (
        401,
        "Unauthorized",
        "no bearer token, or one that is not configured",
    ),
    (403, "Forbidden", "the token's role may not do this"),
    (
        408,
        "RequestTimeout",
        "the request took longer than the control plane allows (30 s)",
    ),
    (
        413,
        "PayloadTooLarge",
        "the body or one of its lines is larger than the configured limit",
    ),
    (
        429,
        "RateLimited",
        "over the client address's or the token's rate limit; retry after `Retry-After` seconds",
    ),
];

impl utoipa::Modify for StandardResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for &(status, name, description) in SHARED {
            components.responses.insert(
                name.to_owned(),
                RefOr::T(shared_response(status, description)),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for status in shared_statuses(operation) {
                    let name = SHARED
                        .iter()
                        .find(|(s, _, _)| *s == status)
                        .map(|(_, name, _)| *name)
                        .expect("shared_statuses returns statuses from SHARED");
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// The shared statuses `operation` can answer, by its shape.
fn shared_statuses(operation: &Operation) -> Vec<u16> {
    let authenticated = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let has_body = operation.request_body.is_some();
    let has_params = operation
        .parameters
        .as_ref()
        .is_some_and(|params| !params.is_empty());
    let mut statuses = vec![408, 429];
    if authenticated {
        statuses.extend([401, 403]);
    }
    if has_body || has_params {
        statuses.push(400);
    }
    if has_body {
        statuses.push(413);
    }
    statuses
}

fn shared_response(status: u16, description: &str) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    let header = |kind: Type, description: &str| {
        HeaderBuilder::new()
            .schema(Some(Object::with_type(kind)))
            .description(Some(description))
            .build()
    };
    match status {
        401 => response = response.header("WWW-Authenticate", header(Type::String, "`Bearer`")),
        429 => {
            response = response.header(
                "Retry-After",
                header(Type::Integer, "seconds to wait before retrying"),
            );
        }
        _ => {}
    }
    response.build()
}
