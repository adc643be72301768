//! `GET /v1/explain`: the answer to one query with the decision behind it, as JSON.
//!
//! It runs the query through `dns::explain_query`, so what it shows is what DNS answers; this
//! file only turns the explanation into its JSON view.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use std::net::{IpAddr, Ipv4Addr};

use axum::Json;
use axum::extract::State;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dns::{ExplainError, explain_query};
use crate::routing::DcTrace;

use super::ControlState;
use super::error::ApiError;
use super::extract::Query;

/// The record type explained when the request does not say.
const DEFAULT_TYPE: &str = "A";
/// The resolver address explained when the request does not say: this host.
const DEFAULT_RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Query parameters of `/v1/explain`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ExplainParams {
    /// The name asked, e.g. `www.example.com`.
    name: String,
    /// The record type; default `A`.
    #[serde(rename = "type")]
    qtype: Option<String>,
    /// The resolver's address; default 127.0.0.1.
    #[param(value_type = Option<String>)]
    client: Option<IpAddr>,
    /// The EDNS Client Subnet, e.g. `81.2.69.0/24`.
    ecs: Option<String>,
}

/// An explanation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExplainView {
    name: String,
    #[serde(rename = "type")]
    qtype: String,
    rcode: String,
    answers: Vec<String>,
    /// The authority section: the SOA of a negative answer, the NS records of a referral.
    authority: Vec<String>,
    /// The address located.
    client: String,
    /// `ecs` or `resolver`.
    client_source: &'static str,
    /// The geo database network that matched.
    network: String,
    country: Option<String>,
    continent: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    ecs_scope: Option<u8>,
    /// The network the answer holds for (the scope and the prefix it covers), e.g.
    /// `81.2.69.0/24`: every client in it gets this answer under the current state.
    scope_network: String,
    service: Option<String>,
    policy: Option<&'static str>,
    /// Feature toggles an operator switched off (`GET /v1/toggles`), which this decision was
    /// made under.
    toggles_off: Vec<&'static str>,
    basis: Option<String>,
    failed_open: bool,
    /// Which order of its addresses the answer got, where they rotate (`rotation: cyclic` or
    /// `random`), e.g. `cyclic: order 2 of 3`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<String>,
    datacenters: Vec<DcTraceView>,
}

/// One datacenter in an explanation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DcTraceView {
    name: String,
    rank: Option<usize>,
    distance_km: Option<f64>,
    score: Option<f64>,
    utilization: Option<f64>,
    standing: String,
    unverified: bool,
    reason: String,
}

/// Explain the answer to one query.
#[utoipa::path(get, path = "/v1/explain", params(ExplainParams),
    responses((status = 200, description = "the answer DNS gives this query, and why", body = ExplainView)))]
pub(crate) async fn explain(
    State(state): State<ControlState>,
    Query(params): Query<ExplainParams>,
) -> Result<Json<ExplainView>, ApiError> {
    let snapshot = state.shared.load();
    let qtype = params
        .qtype
        .clone()
        .unwrap_or_else(|| DEFAULT_TYPE.to_owned());
    let ecs = params
        .ecs
        .as_deref()
        .map(|text| {
            text.parse::<IpNet>().map_err(|_| {
                ApiError::bad_request(format!("ecs: {text:?} is not a network (address/prefix)"))
            })
        })
        .transpose()?;
    let resolver = params.client.unwrap_or(DEFAULT_RESOLVER);
    let explained = explain_query(&snapshot, &params.name, &qtype, resolver, ecs)
        .map_err(|error: ExplainError| ApiError::bad_request(error.to_string()))?;
    let (service, routing) = match explained.routing {
        Some((service, routing)) => (Some(service), Some(routing)),
        None => (None, None),
    };
    let location = explained.location;
    Ok(Json(ExplainView {
        name: params.name,
        qtype: qtype.to_ascii_uppercase(),
        rcode: explained.rcode,
        answers: explained.answers,
        authority: explained.authority,
        client: explained.client.to_string(),
        client_source: if explained.from_ecs {
            "ecs"
        } else {
            "resolver"
        },
        network: explained.network.to_string(),
        country: location.and_then(|l| l.country).map(|c| c.to_string()),
        continent: location.and_then(|l| l.continent).map(|c| c.to_string()),
        latitude: location.map(|l| l.coordinates.latitude),
        longitude: location.map(|l| l.coordinates.longitude),
        ecs_scope: explained.ecs_scope,
        scope_network: explained.scope_network.to_string(),
        service,
        policy: routing.as_ref().map(|r| r.policy),
        toggles_off: routing
            .as_ref()
            .map(|r| r.toggles_off.iter().map(|t| t.name()).collect())
            .unwrap_or_default(),
        basis: routing
            .as_ref()
            .map(|r| format!("{:?}", r.basis).to_lowercase()),
        failed_open: routing.as_ref().is_some_and(|r| r.failed_open),
        rotation: explained.rotation,
        datacenters: routing
            .map(|r| r.datacenters.iter().map(trace_view).collect())
            .unwrap_or_default(),
    }))
}

fn trace_view(trace: &DcTrace) -> DcTraceView {
    DcTraceView {
        name: trace.name.clone(),
        rank: trace.rank,
        distance_km: trace.distance_km.map(|d| (d * 10.0).round() / 10.0),
        score: trace.score,
        utilization: trace.utilization.filter(|u| u.is_finite()),
        standing: trace.standing.label().to_owned(),
        unverified: trace.unverified,
        reason: trace.reason.clone(),
    }
}
