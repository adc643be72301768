//! What a query log line says about a sampled query (`querylog`), worked out on the query
//! log's writer thread, never on the query path: the query and the reply are decoded from their
//! bytes, the datacenters are those whose addresses the reply actually carried (whichever path
//! answered, and whatever rotation or rate limiting did to it), and the routing reason comes
//! from running the query again through [`respond`] and retracing its decision on the very
//! snapshot that answered it, as `explain` does.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_server::net::xfer::Protocol as HickoryProtocol;
use hickory_server::server::Request;

use crate::config::{Config, Policy, ServiceConfig};
use crate::metrics::Rcode;
use crate::querylog::{Describe, Line, Protocol, Sampled, Sent};
use crate::routing::Basis;
use crate::traffic::network_of;

use super::Snapshot;
use super::answer::{Located, RoutedInfo};
use super::edns::ClientAddr;
use super::explain::retrace;
use super::respond::{Transport, respond};

impl Describe for Snapshot {
    fn describe(&self, sampled: &Sampled) -> Line {
        describe(self, sampled)
    }
}

/// The line for `sampled`, answered from `snapshot`.
fn describe(snapshot: &Snapshot, sampled: &Sampled) -> Line {
    let mut line = Line::new(sampled);
    let reply = Message::from_vec(sampled.reply()).ok();
    line.rcode = reply
        .as_ref()
        .map_or("OTHER", |reply| {
            Rcode::from_code(u16::from(reply.metadata.response_code)).label()
        })
        .to_owned();
    line.scope = reply.as_ref().and_then(reply_scope);
    let (protocol, transport) = match sampled.protocol {
        Protocol::Udp => (HickoryProtocol::Udp, Transport::Udp),
        Protocol::Tcp => (HickoryProtocol::Tcp, Transport::Tcp),
    };
    let Ok(request) = Request::from_bytes(sampled.query().to_vec(), sampled.src, protocol) else {
        line.client = network_of(sampled.src.ip(), u8::MAX).to_string();
        line.reason = "malformed".to_owned();
        return line;
    };
    if let Some(query) = request.queries.queries().first() {
        line.name = Some(query.original().name().to_string());
        line.qtype = Some(query.query_type().to_string());
    }
    let response = respond(snapshot, &request, sampled.src.ip(), transport);
    let client = response.client.unwrap_or(ClientAddr {
        ip: sampled.src.ip(),
        source_prefix: u8::MAX,
        ecs: None,
    });
    line.client = network_of(client.ip, client.source_prefix).to_string();
    line.ecs = client.ecs.is_some_and(|ecs| ecs.source_prefix() > 0);
    let answered = reply
        .as_ref()
        .filter(|_| sampled.sent != Sent::Dropped)
        .map(answered_addresses)
        .unwrap_or_default();
    line.reason = match response.reply.routed {
        Some(routed) => {
            let config = &snapshot.loaded.config;
            let service = &config.services[usize::from(routed.service.0)];
            line.service = Some(service.id.clone());
            line.datacenters = datacenters_of(config, service, &answered);
            routing_reason(snapshot, routed, &client).to_owned()
        }
        None if response.lookup.is_some() => "directory".to_owned(),
        // Not routed: what kind of answer, by the reply as sent.
        None => match line.rcode.as_str() {
            "NOERROR" if reply.as_ref().is_some_and(|r| !r.answers.is_empty()) => {
                "static".to_owned()
            }
            "NOERROR" => "nodata".to_owned(),
            rcode => rcode.to_ascii_lowercase(),
        },
    };
    line
}

/// The ECS scope prefix of `reply`'s OPT record, if it has one with ECS.
fn reply_scope(reply: &Message) -> Option<u8> {
    reply
        .edns
        .as_ref()?
        .options()
        .as_ref()
        .iter()
        .find_map(|(_, option)| match option {
            EdnsOption::Subnet(subnet) => Some(subnet.scope_prefix()),
            _ => None,
        })
}

/// The addresses of `reply`'s A and AAAA answers, in order.
fn answered_addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// The datacenters of `service` whose pools hold the `answered` addresses, in answer order,
/// each once.
fn datacenters_of(config: &Config, service: &ServiceConfig, answered: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for address in answered {
        let pool = service.pools.iter().find(|pool| match address {
            IpAddr::V4(v4) => pool.a.contains(v4),
            IpAddr::V6(v6) => pool.aaaa.contains(v6),
        });
        if let Some(pool) = pool {
            let name = &config.datacenters[pool.datacenter].name;
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// Why routing answered as it did, in one word: `fail-open` when every datacenter was
/// ineligible; `spill` when a `nearest-with-capacity` service answered with a datacenter
/// farther than the nearest eligible one (capacity, or a slow start or latency limit, moved the
/// client on); else the decision's basis (`nearest`, `override`, `failover`, `weighted`,
/// `metric`, `least-loaded`, `no-location`).
fn routing_reason(snapshot: &Snapshot, routed: RoutedInfo, client: &ClientAddr) -> &'static str {
    if routed.failed_open {
        return "fail-open";
    }
    let loaded = &snapshot.loaded;
    let service = &loaded.config.services[usize::from(routed.service.0)];
    let located = Located::new(&loaded.geo, client);
    let location = located.hit.cell.map(|cell| *loaded.geo.location(cell));
    let explanation = retrace(snapshot, routed.service, &located, location.as_ref());
    match explanation.basis {
        Basis::Distance => {
            let policy = snapshot.routing.toggles().policy(service.policy);
            let distance_of = |dc| {
                explanation
                    .datacenters
                    .iter()
                    .find(|trace| trace.dc == dc)
                    .and_then(|trace| trace.distance_km)
            };
            let first = explanation.ranking.first().and_then(|&dc| distance_of(dc));
            let nearest = explanation
                .datacenters
                .iter()
                .filter(|trace| {
                    trace.standing.is_eligible() && !trace.reason.starts_with("skipped: geofenced")
                })
                .filter_map(|trace| trace.distance_km)
                .fold(f64::INFINITY, f64::min);
            match first {
                Some(first) if policy == Policy::NearestWithCapacity && first > nearest + 1e-6 => {
                    "spill"
                }
                _ => "nearest",
            }
        }
        Basis::NoLocation => "no-location",
        Basis::Order => "failover",
        Basis::Weight => "weighted",
        Basis::Score => "metric",
        Basis::Load => "least-loaded",
        Basis::Override => "override",
    }
}
