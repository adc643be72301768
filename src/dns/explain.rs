//! Explaining a query: what meridian answers and why, for `/v1/explain` and `_explain.` TXT.
//!
//! Runs the query through the one answer path ([`respond`]) exactly as a real query over TCP,
//! then retraces the routing decision with every datacenter's reason, so the explanation
//! always matches the answer.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use ipnet::IpNet;

use super::Snapshot;
use crate::geo::Location;
use crate::metrics::Rcode;
use crate::routing::{self, Explanation, ServiceId};

use super::answer::Located;
use super::edns::{ClientAddr, masked};
use super::respond::{Transport, respond};

/// The label that asks for an explanation over DNS: `_explain.www.example.com TXT`.
pub(crate) const EXPLAIN_LABEL: &[u8] = b"_explain";

/// What meridian answers to one query, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryExplanation {
    /// The response code.
    pub rcode: String,
    /// The answer section, as text (`www.example.com. 30 IN A 192.0.2.3`).
    pub answers: Vec<String>,
    /// The authority section, as text (the SOA of a negative answer, the NS of a referral).
    pub authority: Vec<String>,
    /// The address that was located.
    pub client: IpAddr,
    /// Whether it came from EDNS Client Subnet (else it is the resolver's).
    pub from_ecs: bool,
    /// The geo database network that matched.
    pub network: IpNet,
    /// Where the database places the client.
    pub location: Option<Location>,
    /// The ECS scope the reply carries (queries with ECS only).
    pub ecs_scope: Option<u8>,
    /// The network the answer holds for: every address in it gets the same answer under the
    /// current state (the client's address at the scope's length, in its own family).
    pub scope_network: IpNet,
    /// The service answered by routing, and its decision retraced.
    pub routing: Option<(String, Explanation)>,
    /// Where the answer's addresses rotate (`rotation: cyclic` or `random`, and more than one
    /// order to choose from): which order this answer got, e.g. `cyclic: order 2 of 3` (order
    /// `k` starts each datacenter's addresses at its `k`-th).
    pub rotation: Option<String>,
}

/// The question to explain cannot be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// Not a domain name.
    #[error("{0:?} is not a domain name")]
    Name(String),
    /// Not a record type.
    #[error("{0:?} is not a record type")]
    Type(String),
    /// The ECS network has host bits set past its prefix, or a bad prefix.
    #[error("{0}")]
    Ecs(String),
}

/// Explains the query `name`/`qtype` from `resolver`, with ECS `ecs` if given.
///
/// # Errors
///
/// [`ExplainError`] for a name, type or ECS network that no query could carry.
pub fn explain_query(
    snapshot: &Snapshot,
    name: &str,
    qtype: &str,
    resolver: IpAddr,
    ecs: Option<IpNet>,
) -> Result<QueryExplanation, ExplainError> {
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    let name = Name::from_ascii(&fqdn).map_err(|_| ExplainError::Name(name.to_owned()))?;
    let qtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|_| ExplainError::Type(qtype.to_owned()))?;
    let ecs = ecs.map(|net| ClientSubnet::new(net.addr(), net.prefix_len(), 0));
    // Checked here so that a bad network is the caller's error, not a FORMERR explained.
    ClientAddr::from_query(edns_with(ecs).as_ref(), resolver).map_err(|_| {
        ExplainError::Ecs("the ECS network has bits set past its prefix length".to_owned())
    })?;
    Ok(explain_client(snapshot, &name, qtype, resolver, ecs))
}

/// Explains the query `name`/`qtype` from `resolver` (with `ecs`, if any) by running it through
/// [`respond`], as a query over TCP (so nothing is truncated), then retracing its routing.
pub(crate) fn explain_client(
    snapshot: &Snapshot,
    name: &Name,
    qtype: RecordType,
    resolver: IpAddr,
    ecs: Option<ClientSubnet>,
) -> QueryExplanation {
    let loaded = &snapshot.loaded;
    let request = query_request(name, qtype, resolver, ecs);
    let response = respond(snapshot, &request, resolver, Transport::Tcp);
    // A malformed ECS option cannot reach here (see `explain_query`); treat it as absent.
    let client = response.client.unwrap_or(ClientAddr {
        ip: resolver,
        source_prefix: full_prefix(resolver),
        ecs: None,
    });
    let located = Located::new(&loaded.geo, &client);
    let location = located.hit.cell.map(|cell| *loaded.geo.location(cell));
    let routing = response.reply.routed.map(|routed| {
        let explanation = retrace(snapshot, routed.service, &located, location.as_ref());
        let id = loaded.config.services[usize::from(routed.service.0)]
            .id
            .clone();
        (id, explanation)
    });
    let rotation = response.reply.routed.and_then(|routed| {
        let (k, n) = routed.order;
        let rotation = loaded.config.services[usize::from(routed.service.0)].rotation;
        (n > 1).then(|| format!("{}: order {} of {n}", rotation.name(), k + 1))
    });
    QueryExplanation {
        rcode: Rcode::from_code(u16::from(response.metadata.response_code))
            .label()
            .to_owned(),
        answers: response.answers().map(Record::to_string).collect(),
        authority: response.authorities().map(Record::to_string).collect(),
        client: client.ip,
        from_ecs: client.ecs.is_some_and(|e| e.source_prefix() > 0),
        network: IpNet::new(
            masked(client.ip, located.hit.prefix_len),
            located.hit.prefix_len,
        )
        .expect("prefix lengths come from the address's family"),
        location,
        ecs_scope: client.ecs.map(|_| client.reply_scope(response.reply.scope)),
        scope_network: IpNet::new(
            masked(client.ip, response.reply.scope),
            response.reply.scope,
        )
        .expect("scopes come from the address's family"),
        routing,
        rotation,
    }
}

/// The decision for `service` and the `located` client (at `location`), retraced with every
/// datacenter's reason: for explanations and the query log's reasons.
pub(crate) fn retrace(
    snapshot: &Snapshot,
    service: ServiceId,
    located: &Located,
    location: Option<&Location>,
) -> Explanation {
    routing::explain(
        &snapshot.routing,
        &snapshot.loaded.config,
        snapshot.routing.states(),
        service,
        &located.client,
        location,
    )
}

/// An EDNS record carrying `ecs`, or none.
fn edns_with(ecs: Option<ClientSubnet>) -> Option<Edns> {
    ecs.map(|ecs| {
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Subnet(ecs));
        edns
    })
}

/// The request a resolver at `resolver` would send for `name`/`qtype`, decoded as the server
/// decodes it.
fn query_request(
    name: &Name,
    qtype: RecordType,
    resolver: IpAddr,
    ecs: Option<ClientSubnet>,
) -> Request {
    let mut message = Message::query();
    message.add_query(Query::query(name.clone(), qtype));
    if let Some(edns) = edns_with(ecs) {
        message.set_edns(edns);
    }
    let bytes = message.to_vec().expect("a one-question query encodes");
    Request::from_bytes(bytes, SocketAddr::new(resolver, 0), Protocol::Tcp)
        .expect("a query we encoded decodes")
}

/// The host prefix of `ip`'s family.
fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The explanation as TXT strings (each under 255 bytes), for `_explain.` queries.
pub(crate) fn txt_lines(explanation: &QueryExplanation) -> Vec<String> {
    let place = explanation.location.map_or_else(
        || "unlocated".to_owned(),
        |l| {
            format!(
                "{} {} ({:.2},{:.2})",
                l.country.map_or("??".to_owned(), |c| c.to_string()),
                l.continent.map_or("??", |c| c.code()),
                l.coordinates.latitude,
                l.coordinates.longitude
            )
        },
    );
    let mut lines = vec![format!(
        "client {} ({}) network {} {place}",
        explanation.client,
        if explanation.from_ecs {
            "ecs"
        } else {
            "resolver"
        },
        explanation.network
    )];
    lines.push(format!(
        "rcode {} scope {} holds for {} answer {}",
        explanation.rcode,
        explanation
            .ecs_scope
            .map_or("-".to_owned(), |s| s.to_string()),
        explanation.scope_network,
        if explanation.answers.is_empty() {
            "-".to_owned()
        } else {
            explanation.answers.join(" | ")
        }
    ));
    if let Some((service, routing)) = &explanation.routing {
        lines.push(format!(
            "service {service} policy {} basis {}{}{}",
            routing.policy,
            format!("{:?}", routing.basis).to_lowercase(),
            if routing.failed_open {
                " FAILED OPEN"
            } else {
                ""
            },
            explanation
                .rotation
                .as_ref()
                .map_or(String::new(), |rotation| format!(" rotation {rotation}")),
        ));
        if !routing.toggles_off.is_empty() {
            let off: Vec<&str> = routing.toggles_off.iter().map(|t| t.name()).collect();
            lines.push(format!("toggles off: {}", off.join(" ")));
        }
        for dc in &routing.datacenters {
            let distance = dc
                .distance_km
                .map_or(String::new(), |d| format!(" {d:.0} km"));
            let score = dc.score.map_or(String::new(), |s| format!(" score {s:.1}"));
            let rank = dc.rank.map_or("-".to_owned(), |r| r.to_string());
            lines.push(format!(
                "{rank} {}{distance}{score}: {}",
                dc.name, dc.reason
            ));
        }
    }
    lines
        .into_iter()
        .map(|mut line| {
            line.truncate(255);
            line
        })
        .collect()
}

/// TXT records of an explanation, owned by `owner`.
pub(crate) fn txt_records(owner: &Name, explanation: &QueryExplanation) -> Vec<Record> {
    txt_lines(explanation)
        .into_iter()
        .map(|line| {
            Record::from_rdata(
                owner.clone(),
                0,
                RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![line])),
            )
        })
        .collect()
}
